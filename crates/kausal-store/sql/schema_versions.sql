SELECT version, name FROM kausal_schema ORDER BY version
