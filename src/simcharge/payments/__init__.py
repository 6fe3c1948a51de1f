"""Payments: orders' attempts at the payment providers (Stripe, PayPal, Alipay, WeChat Pay).

`payments.providers` holds one adapter per provider behind the `PaymentProvider` protocol.
"""
