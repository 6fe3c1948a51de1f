"""Payment provider adapters behind one protocol (`base.PaymentProvider`)."""
