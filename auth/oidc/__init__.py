"""The OpenID Connect provider: other library services log patrons in with their account."""
