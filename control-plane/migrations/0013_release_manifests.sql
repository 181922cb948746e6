-- Releases made before releases had manifests (0002) kept an empty one, which the store read as
-- the default manifest. The store now refuses a manifest it cannot decode, so those releases
-- get the default written down: one web process on port 8080 with the default checks and limits.
UPDATE releases SET manifest = '{"processes":{"web":{"command":null,"port":8080,"replicas":1,"healthcheck":{"probe":{"type":"tcp"},"interval_ms":2000,"timeout_ms":2000,"healthy_threshold":1,"unhealthy_threshold":3,"start_period_ms":0},"limits":{"memory_bytes":536870912,"millicpus":1000,"pids":256}}},"deploy":{"timeout_ms":120000,"stability_window_ms":3000,"drain_timeout_ms":30000,"stop_grace_ms":10000},"release_command":null,"static_files":null}'
WHERE manifest = '';
