"""Who may do what: principals, roles and API tokens. No HTTP types, no archive imports."""
