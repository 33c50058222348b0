-- Cursor paging: the people of an organization by when they joined, and its invitations by when
-- they were sent, each read as a range of one index (the page after a cursor starts inside it),
-- like the API key lists of 0003 and the audit log.

CREATE INDEX memberships_by_created ON memberships (organization_id, created_at, user_id);
CREATE INDEX invitations_by_created ON invitations (organization_id, created_at, id);
