-- The integration store lives beside Temporal's databases on the same server.
CREATE DATABASE ledgerbridge OWNER temporal;
