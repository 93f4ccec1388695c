-- The tenant each numbered event was recorded for (its metadata's tenant_id; null for
-- platform-level events), so that a tenant reads its own part of the audit order
-- (GET /v1/audit/events) along an index. Filled by the audit_order projection (version 3).
ALTER TABLE audit_order ADD COLUMN tenant_id TEXT;
CREATE INDEX audit_order_tenant ON audit_order (tenant_id, position);
