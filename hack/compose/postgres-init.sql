-- docker-compose.yml: the postgres container creates the `matchmaking` database (POSTGRES_DB);
-- each service owns its database (both keep a _sqlx_migrations table), so notifications gets
-- its own. Runs once, when the data volume is first initialised.
CREATE DATABASE notifications OWNER swappo;
