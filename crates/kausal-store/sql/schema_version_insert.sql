INSERT INTO kausal_schema (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING
