"""Lines (virtual SIMs), their wallets and unit buckets."""
