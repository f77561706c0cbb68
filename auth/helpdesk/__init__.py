"""The helpdesk's service layer: find a patron, see their state, act on it with a reason.

`model` holds what the helpdesk sees (plain values, pure rules), `errors` why it refuses,
`service` the `Helpdesk` itself (the staff console's pages call it; its SQL is in
`auth.store.helpdesk`).
"""
