"""The currencies a wallet may hold and their minor units, as ISO 4217 (list one) states them.

Kept here rather than read from Babel: Babel follows CLDR, whose digits are for display and
change between releases (CLDR gives HUF and TWD no decimals; ISO 4217 gives them two). Amounts
are stored in minor units, so the exponent of a currency must never move under a stored amount.
Metals, funds codes without a minor unit and the testing code (XAU, XDR, XTS, XXX …) are absent:
no wallet holds them.
"""

from __future__ import annotations

from typing import Final

_NOT_TWO: Final = {
    # no minor unit
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # thousandths
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # units of account with four decimals
    "CLF": 4, "UYW": 4,
}  # fmt: skip

_TWO: Final = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN
BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP
GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK
LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK
NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER
ZAR ZMW ZWG
""".split()  # noqa: SIM905 (a list of 140 codes reads best as text)

MINOR_UNITS: Final[dict[str, int]] = {**dict.fromkeys(_TWO, 2), **_NOT_TWO}
"""Currency code → number of decimal places of its minor unit."""
