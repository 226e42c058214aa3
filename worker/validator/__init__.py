"""The signal-code validator: the worker's own compiler and sandbox behind a small authenticated HTTP API.

generate-strategy asks it before a trader is saved (Edge Functions cannot run Python). It runs the
worker image with `python -m worker.validator` as its own always-on Fly app (or a `trademind dev up`
part locally), holds no user data and no credential but its shared secret, and answers

    POST /validate  {signalCode, timeframes, symbols}   Authorization: Bearer $VALIDATOR_SECRET
      200 {ok: true, policyVersion, checks, matches, declined}
      422 {error: {code: "signal_code_rejected", message, line, stage: "compile" | "dry_run"}}
    GET /health      {status, policyVersion}
"""
