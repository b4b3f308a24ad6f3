"""Deploying the exchange as a cluster: one topology, and the files and compose.yaml from it."""
