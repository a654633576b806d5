"""One target's job in the enhance flow: its context and outcome, its references, its record, its stamp request."""
