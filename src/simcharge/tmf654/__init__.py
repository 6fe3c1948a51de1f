"""TM Forum TMF654 Prepay Balance Management v4, mapped onto the ledger."""
