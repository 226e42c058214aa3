"""Estrategia: comprar cuando el RSI de 15 minutos sale de sobreventa y el precio está sobre la media de 50."""

PERIODO_RSI = 14
NIVEL_SOBREVENTA = 30
PERIODO_MEDIA = 50


def rsi_anterior(cierres, periodo):
    """RSI calculado sin la última vela, para detectar el cruce."""
    ganancias = 0.0
    perdidas = 0.0
    for i in range(len(cierres) - periodo - 1, len(cierres) - 1):
        cambio = cierres[i] - cierres[i - 1]
        if cambio > 0:
            ganancias += cambio
        else:
            perdidas -= cambio
    if perdidas == 0:
        return 100.0
    rs = ganancias / perdidas
    return 100 - 100 / (1 + rs)


def check_signal(symbol, ticker, klines):
    velas = klines["15m"]
    cierres = get_closes(velas)
    if len(cierres) < PERIODO_MEDIA + PERIODO_RSI + 2:
        return False

    rsi_actual = get_latest_rsi(velas, PERIODO_RSI)
    rsi_previo = rsi_anterior(cierres, PERIODO_RSI)
    media = get_latest_sma(velas, PERIODO_MEDIA)

    # El RSI cruza hacia arriba el nivel de sobreventa
    sale_de_sobreventa = rsi_previo < NIVEL_SOBREVENTA <= rsi_actual
    precio_sobre_media = cierres[-1] > media
    return sale_de_sobreventa and precio_sobre_media
