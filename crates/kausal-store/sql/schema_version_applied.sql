SELECT COUNT(*) FROM kausal_schema WHERE version = $1
