UPDATE dead_letters
SET replay_count = replay_count + 1
WHERE dlq_id = $1
