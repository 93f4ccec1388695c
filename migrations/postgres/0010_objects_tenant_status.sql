-- The provider dashboard counts a tenant's objects by status; without this index it scanned every
-- object of every tenant.
CREATE INDEX objects_tenant_status ON objects (tenant_id, status);
