-- scorekit out of PostgreSQL: run by `scorekit db uninstall`. Drops the schema with its models,
-- deployments, attachments, errors and functions; dropping the functions drops the scorekit
-- triggers on attached tables. The tables themselves and their score columns stay. The roles
-- scorekit_publisher and scorekit_scorer are cluster-wide and stay too.
DROP SCHEMA IF EXISTS scorekit CASCADE;
