"""Small, domain-free helpers: ids, clock, money, i18n."""
