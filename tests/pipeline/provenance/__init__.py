"""Tests of pipeline/provenance: XMP and Content Credentials in every format."""
