"""Shared test machinery: hypothesis strategies, dense oracles and the backend conformance suite."""
