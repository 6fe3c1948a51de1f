-- The database work of one Nchf update, as one PL/pgSQL call: the session locked; the usage
-- record written; the session's state written back; the used units posted against the last
-- reservation (a post_pending transfer, the reservation marked posted) and the next quota
-- reserved (a pending transfer); the two accounts' totals; the line's activity. Less than
-- simcharge must do (no rating, no choice among pots, no idempotent answers, no alerts), so
-- what it measures is a ceiling (`python -m bench.ceiling`). `ceiling_pending` holds each
-- session's first reservation and accounts, made here for the measurement.
DROP TABLE IF EXISTS ceiling_pending;
CREATE TABLE ceiling_pending (session_id uuid PRIMARY KEY, pending_id uuid, bucket uuid, consumption uuid);
DO $$
DECLARE s record; b uuid; c uuid; p uuid;
BEGIN
  FOR s IN SELECT id, line_id FROM charging_sessions LOOP
    b := gen_random_uuid(); c := gen_random_uuid(); p := gen_random_uuid();
    INSERT INTO ledger_accounts(id, unit, code, key, line_id, debits_must_not_exceed_credits, credits_must_not_exceed_debits, debits_pending, debits_posted, credits_pending, credits_posted, created_at)
    VALUES (b, 'DATA_B', 'bucket', 'ceiling-b:'||b, s.line_id, true, false, 1048576, 0, 0, 1099511627776, now()),
           (c, 'DATA_B', 'consumption', 'ceiling-c:'||c, NULL, false, false, 0, 0, 1048576, 0, now());
    INSERT INTO ledger_transfers(id, debit_account_id, credit_account_id, amount, unit, kind, pending_status, timeout_at, code, reference, created_at)
    VALUES (p, b, c, 1048576, 'DATA_B', 'pending', 'pending', now() + interval '1 hour', 'reserve', 'session:'||s.id, now());
    INSERT INTO ceiling_pending VALUES (s.id, p, b, c);
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ceiling_nchf(p_session uuid, p_seq bigint, p_used bigint, p_want bigint, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE s charging_sessions; pp ceiling_pending; newp uuid := gen_random_uuid(); old_amount bigint;
BEGIN
  SELECT * INTO s FROM charging_sessions WHERE id = p_session FOR UPDATE;
  SELECT * INTO pp FROM ceiling_pending WHERE session_id = p_session;
  pp.pending_id := coalesce((s.groups->'200'->>'pending')::uuid, pp.pending_id);
  PERFORM 1 FROM ledger_accounts WHERE id IN (pp.bucket, pp.consumption) ORDER BY id FOR UPDATE;
  SELECT amount INTO old_amount FROM ledger_transfers WHERE id = pp.pending_id FOR UPDATE;
  UPDATE lines SET last_activity_at = p_now WHERE id = s.line_id;
  INSERT INTO usage_records(id, source, external_id, line_id, service, country, zone, quantity, rated, from_buckets, from_wallet, charge, currency, unbilled, taken, session_id, started_at, created_at)
  VALUES (gen_random_uuid(), 'nchf', s.id || ':' || p_seq, s.line_id, 'data', NULL, 'home', p_used, p_used, p_used, 0, 0, 'USD', 0, jsonb_build_array(jsonb_build_object('bucket', pp.bucket, 'amount', p_used)), s.id, p_now, p_now);
  UPDATE charging_sessions SET sequence = p_seq, answers = jsonb_build_object(p_seq::text, p_want), groups = jsonb_build_object('200', jsonb_build_object('granted', p_want, 'pending', newp)), deadline = p_now + interval '1 hour', updated_at = p_now WHERE id = s.id;
  INSERT INTO ledger_transfers(id, debit_account_id, credit_account_id, amount, unit, kind, pending_id, code, reference, created_at)
  VALUES (gen_random_uuid(), pp.bucket, pp.consumption, p_used, 'DATA_B', 'post_pending', pp.pending_id, 'usage', 'session:'||s.id, p_now);
  UPDATE ledger_transfers SET pending_status = 'posted' WHERE id = pp.pending_id AND pending_status = 'pending';
  INSERT INTO ledger_transfers(id, debit_account_id, credit_account_id, amount, unit, kind, pending_status, timeout_at, code, reference, created_at)
  VALUES (newp, pp.bucket, pp.consumption, p_want, 'DATA_B', 'pending', 'pending', p_now + interval '1 hour', 'reserve', 'session:'||s.id, p_now);
  UPDATE ledger_accounts SET debits_pending = debits_pending - old_amount + p_want, debits_posted = debits_posted + p_used WHERE id = pp.bucket;
  UPDATE ledger_accounts SET credits_pending = credits_pending - old_amount + p_want, credits_posted = credits_posted + p_used WHERE id = pp.consumption;
  RETURN p_want;
END $$;
