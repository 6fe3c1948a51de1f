"""Top-up orders: quotes, orders, fulfilment (credited exactly once), refunds, receipts."""
