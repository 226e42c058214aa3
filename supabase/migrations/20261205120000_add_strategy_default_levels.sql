-- A strategy's own stop-loss and take-profit, in percent of the entry price: the user may edit them, and a
-- backtest without the AI opens every signal with them (`trademind backtest --ai off`).

alter table public.traders
  add column default_stop_loss_percent numeric not null default 2,
  add column default_take_profit_percent numeric not null default 4,
  add constraint traders_default_stop_loss_percent_range
    check (default_stop_loss_percent > 0 and default_stop_loss_percent < 100),
  add constraint traders_default_take_profit_percent_range
    check (default_take_profit_percent > 0 and default_take_profit_percent <= 1000);

grant update (default_stop_loss_percent, default_take_profit_percent) on public.traders to authenticated;
