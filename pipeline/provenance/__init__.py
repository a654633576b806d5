"""Provenance in the output file: the facts it states, the XMP packet, signed Content Credentials, the signing key."""
