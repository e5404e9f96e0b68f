"""From a plan to a published model: export, verify, card, diff, push."""
