DROP INDEX requests_running;
CREATE INDEX requests_running ON requests (lease_owner) WHERE state = 'running';
