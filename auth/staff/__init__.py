"""The staff console under /staff/: its own accounts (helpdesk and admin), their login with a
password and a second factor (a TOTP app or a passkey, one-time recovery codes), their
server-side sessions, and the console's frame: the guard every page sits behind, the layout,
the admin's staff and audit-trail pages.

Patron accounts and patron sessions have nothing to do with it: a patron's cookie is never
read under /staff/, and a staff cookie is never sent anywhere else (its path is /staff/).
"""
