SELECT resource FROM span_resources WHERE resource_id = $1
