BEGIN TRANSACTION;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    mode TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    ticket_hash TEXT UNIQUE,
    ticket_expires REAL NOT NULL,
    public_key TEXT,
    notebook_token TEXT,
    listen_port INTEGER NOT NULL,
    base_url TEXT NOT NULL,
    default_url TEXT NOT NULL DEFAULT '/lab',
    job_id TEXT,
    runner TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
INSERT INTO "sessions" VALUES('a8564adc6af156592a4b2edb','alice','waiting','lab','waiting','e33cdf9c7f7120b98e8c78408953e07f2ecd183006b5606df349b4c212acf43e',1.7959085507589166164e+09,NULL,NULL,40001,'/session/a8564adc6af156592a4b2edb/','/lab',NULL,'{}',1.79590495075891661645e+09,1.79590495075891661645e+09);
INSERT INTO "sessions" VALUES('af8a82afe27fe3913d4558fd','alice','starting','lab','redeemed','e26d2da3ab585c9840b157a4a9b5639fda905c2ad33d04d2c598be8883b51236',1.79590855075954723358e+09,'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture','nbtoken',40002,'/session/af8a82afe27fe3913d4558fd/','/lab','3dbe6241ac53035980a3cf73','{"hostname": "resource-1"}',1.79590495075954723362e+09,1.79590495076056027405e+09);
CREATE INDEX sessions_owner ON sessions (owner);
CREATE INDEX sessions_state ON sessions (state);
COMMIT;
