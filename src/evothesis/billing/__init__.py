"""Usage billing: metering records of the backup bucket summed per client, site and day,
reconciled with the export ledger, priced into invoice lines (docs/billing.md)."""
