-- Every (consumer group, topic) pair that handled something: the groups the
-- lag tool watches (ListGroups is not reliable on every broker).
SELECT DISTINCT consumer_group, topic FROM receipts ORDER BY consumer_group, topic
