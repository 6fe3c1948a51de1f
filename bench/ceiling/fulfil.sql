-- The database work of crediting one top-up, as one PL/pgSQL call: the order, its payment and
-- its line locked; the event stored once (a copy stops there) and marked processed; the payment
-- and the order updated; three buckets, each with its ledger account and its grant transfer from
-- the shard's issuance account; the sale transfer from the shard's clearing account to its sales
-- account; every account's totals; the line's validity; the receipt and notice jobs. Less than
-- simcharge must do (no derived ids, no checks of amount, currency or line, no lifecycle rule,
-- no refund news), so what it measures is a ceiling (`python -m bench.ceiling`).
CREATE OR REPLACE FUNCTION ceiling_fulfil(p_ref text, p_evt text, p_body text, p_now timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  o orders; p payments; l lines; ev uuid; b uuid; t uuid; i int;
  units text[] := ARRAY['VOICE_S','DATA_B','SMS'];
  iss uuid; clr uuid; rev uuid;
BEGIN
  SELECT * INTO o FROM orders WHERE reference = p_ref FOR UPDATE;
  SELECT * INTO p FROM payments WHERE order_id = o.id FOR UPDATE;
  SELECT * INTO l FROM lines WHERE id = o.line_id FOR UPDATE;
  INSERT INTO provider_events(id, provider, event_id, event_type, order_id, body, headers, payload, status, received_at)
  VALUES (gen_random_uuid(), 'sandbox', p_evt, 'payment.succeeded', o.id, p_body, '{}', p_body::jsonb, p_body::jsonb, p_now)
  ON CONFLICT DO NOTHING RETURNING id INTO ev;
  IF ev IS NULL THEN RETURN 'duplicate'; END IF;
  UPDATE payments SET state='succeeded', updated_at=p_now, next_check_at=NULL WHERE id=p.id AND state<>'succeeded';
  IF NOT FOUND THEN RETURN 'already'; END IF;
  UPDATE orders SET state='fulfilled', paid_at=p_now, fulfilled_at=p_now, paid_amount=o.total, paid_currency=o.currency WHERE id=o.id;
  SELECT id INTO clr FROM ledger_accounts WHERE key = 'clearing:sandbox:USD#' || (get_byte(uuid_send(o.id), 15) % 15 + 1);
  SELECT id INTO rev FROM ledger_accounts WHERE key = 'revenue:sales:USD#' || (get_byte(uuid_send(o.id), 15) % 15 + 1);
  PERFORM 1 FROM ledger_accounts WHERE id IN (clr, rev) ORDER BY id FOR UPDATE;
  t := gen_random_uuid();
  INSERT INTO ledger_transfers(id, debit_account_id, credit_account_id, amount, unit, kind, code, reference, created_at)
  VALUES (t, clr, rev, o.price, 'USD', 'posted', 'topup', 'order:'||o.id, p_now);
  UPDATE ledger_accounts SET debits_posted = debits_posted + o.price WHERE id = clr;
  UPDATE ledger_accounts SET credits_posted = credits_posted + o.price WHERE id = rev;
  FOR i IN 1..3 LOOP
    b := gen_random_uuid();
    SELECT id INTO iss FROM ledger_accounts WHERE key = 'issuance:' || units[i] || '#' || (get_byte(uuid_send(o.id), 15) % 15 + 1);
    INSERT INTO ledger_accounts(id, unit, code, key, line_id, debits_must_not_exceed_credits, credits_must_not_exceed_debits, debits_pending, debits_posted, credits_pending, credits_posted, created_at)
    VALUES (b, units[i], 'bucket', 'bucket:'||b, l.id, true, false, 0, 0, 0, 0, p_now);
    INSERT INTO buckets(id, line_id, unit, initial_amount, zones, expires_at, source, created_at)
    VALUES (b, l.id, units[i], 1000, '[]', p_now + interval '30 days', 'order:'||o.id, p_now);
    INSERT INTO ledger_transfers(id, debit_account_id, credit_account_id, amount, unit, kind, code, reference, created_at)
    VALUES (gen_random_uuid(), iss, b, 1000, units[i], 'posted', 'topup', 'order:'||o.id, p_now);
    UPDATE ledger_accounts SET debits_posted = debits_posted + 1000 WHERE id = iss;
    UPDATE ledger_accounts SET credits_posted = credits_posted + 1000 WHERE id = b;
  END LOOP;
  UPDATE lines SET validity_end = greatest(coalesce(validity_end, p_now), p_now) + interval '30 days', last_activity_at = p_now WHERE id = l.id;
  INSERT INTO outbox_jobs(id, kind, payload, status, run_at, attempts, max_attempts, dedupe_key, created_at)
  VALUES (gen_random_uuid(), 'orders.receipt', jsonb_build_object('order_id', o.id), 'pending', p_now, 0, 10, 'orders.receipt:'||o.id, p_now),
         (gen_random_uuid(), 'notifications.send', jsonb_build_object('account_id', o.account_id, 'msisdn', o.msisdn, 'plan', o.plan_snapshot->'names'), 'pending', p_now, 0, 10, NULL, p_now);
  UPDATE provider_events SET processed_at = p_now, outcome = 'fulfilled' WHERE id = ev;
  RETURN 'fulfilled';
END $$;
INSERT INTO ledger_accounts(id, unit, code, key, line_id, debits_must_not_exceed_credits, credits_must_not_exceed_debits, debits_pending, debits_posted, credits_pending, credits_posted, created_at)
SELECT gen_random_uuid(), u, c, k || '#' || n, NULL, false, false, 0, 0, 0, 0, now()
FROM (VALUES ('USD','clearing','clearing:sandbox:USD'), ('USD','revenue','revenue:sales:USD'), ('VOICE_S','issuance','issuance:VOICE_S'), ('DATA_B','issuance','issuance:DATA_B'), ('SMS','issuance','issuance:SMS')) v(u,c,k), generate_series(1,15) n
ON CONFLICT (key) DO NOTHING;
