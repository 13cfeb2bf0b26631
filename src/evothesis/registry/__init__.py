"""Pixel management: clients, their domains and privacy settings."""
