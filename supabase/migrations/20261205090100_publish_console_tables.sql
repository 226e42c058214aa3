-- The console's dashboard follows trades, AI analyses and the machine's state through Realtime as well (signals,
-- positions and traders are published already). Realtime delivers a change only to a subscriber whose JWT may
-- SELECT the row, so each user sees only their own.
alter publication supabase_realtime add table public.trades, public.analysis_history, public.fly_machines;
