SELECT (SELECT COUNT(*) FROM events) AS events,
       (SELECT COUNT(*) FROM receipts) AS receipts,
       (SELECT COUNT(*) FROM dead_letters) AS dead_letters
