BEGIN TRANSACTION;
CREATE TABLE events (
    job_id TEXT NOT NULL, ts REAL NOT NULL, text TEXT NOT NULL);
INSERT INTO "events" VALUES('3dbe6241ac53035980a3cf73',1.79590494927924895288e+09,'Job 3dbe6241ac53035980a3cf73 submitted by alice: application local/append');
INSERT INTO "events" VALUES('6588c0c7e49ab502317419f9',1.79590494928876948359e+09,'Job 6588c0c7e49ab502317419f9 submitted by alice: application local/sleep');
INSERT INTO "events" VALUES('6588c0c7e49ab502317419f9',1.79590494929773879058e+09,'Task 6588c0c7e49ab502317419f9-0-0 started on local (pid 25973)');
INSERT INTO "events" VALUES('3dbe6241ac53035980a3cf73',1.79590494929826092716e+09,'Task 3dbe6241ac53035980a3cf73-0-0 started on local (pid 25971)');
INSERT INTO "events" VALUES('9b2ebe52fc0efb91e9ff70c8',1.79590494929838752746e+09,'Job 9b2ebe52fc0efb91e9ff70c8 submitted by alice: application local/sleep');
INSERT INTO "events" VALUES('9b2ebe52fc0efb91e9ff70c8',1.79590494933843946461e+09,'Task 9b2ebe52fc0efb91e9ff70c8-0-0 started on local (pid 25975)');
INSERT INTO "events" VALUES('3dbe6241ac53035980a3cf73',1.79590494933902645111e+09,'Task 3dbe6241ac53035980a3cf73-0-0 finished with exit code 0');
INSERT INTO "events" VALUES('3dbe6241ac53035980a3cf73',1.79590494933907127376e+09,'Job DONE');
INSERT INTO "events" VALUES('6588c0c7e49ab502317419f9',1.79590494934753155701e+09,'Job FAILED: task 6588c0c7e49ab502317419f9-0-0 failed with exit code 1: duration must not be negative, got -1');
INSERT INTO "events" VALUES('9b2ebe52fc0efb91e9ff70c8',1.79590494981381392477e+09,'Task 9b2ebe52fc0efb91e9ff70c8-0-0: cancel requested, interrupting');
INSERT INTO "events" VALUES('9b2ebe52fc0efb91e9ff70c8',1.79590495003307247167e+09,'Job CANCELLED: cancelled by the user');
CREATE TABLE files (
    uri TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, job_id TEXT,
    name TEXT NOT NULL, path TEXT NOT NULL, length INTEGER NOT NULL, created REAL NOT NULL);
INSERT INTO "files" VALUES('/api/files/temp/ac590eb98760a6cec9d6d2ba/make.py','alice','temp',NULL,'make.py','/tmp/tmpt94ft9ly/server/files/ac590eb98760a6cec9d6d2ba/make.py',2986,1.79590494926574850082e+09);
INSERT INTO "files" VALUES('/api/files/jobs/3dbe6241ac53035980a3cf73/output.txt','alice','job','3dbe6241ac53035980a3cf73','output.txt','/tmp/tmpt94ft9ly/server/files/jobs/3dbe6241ac53035980a3cf73/output.txt',2997,1.79590494933901476861e+09);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    name TEXT NOT NULL, app_id TEXT NOT NULL, app_alias TEXT, app_name TEXT,
    state TEXT NOT NULL, inputs TEXT NOT NULL, resources TEXT, result TEXT, info TEXT,
    attempt INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);
INSERT INTO "jobs" VALUES(1,'3dbe6241ac53035980a3cf73','alice','kept','0ded9266053e77de657728e0','append','Append','DONE','{"message": "from 0.1.0", "file": "/api/files/temp/ac590eb98760a6cec9d6d2ba/make.py"}',NULL,'{"file": "/api/files/jobs/3dbe6241ac53035980a3cf73/output.txt"}',NULL,0,1.79590494927924895288e+09,1.79590494933904719354e+09);
INSERT INTO "jobs" VALUES(2,'6588c0c7e49ab502317419f9','alice','failing','a8e0861e4d845465305a6a15','sleep','Sleep','FAILED','{"duration": -1}',NULL,'{}','task 6588c0c7e49ab502317419f9-0-0 failed with exit code 1: duration must not be negative, got -1',0,1.79590494928876948359e+09,1.7959049493475177288e+09);
INSERT INTO "jobs" VALUES(3,'9b2ebe52fc0efb91e9ff70c8','alice','cancelled','a8e0861e4d845465305a6a15','sleep','Sleep','CANCELLED','{"duration": 60}',NULL,'{}','cancelled by the user',0,1.79590494929838752746e+09,1.79590495003305244446e+09);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, state TEXT NOT NULL, dir TEXT NOT NULL,
    pid INTEGER, pstart INTEGER, started REAL, deadline REAL,
    stop_reason TEXT, stop_at REAL, exit_code INTEGER);
INSERT INTO "tasks" VALUES('3dbe6241ac53035980a3cf73-0-0','3dbe6241ac53035980a3cf73','DONE','/tmp/tmpt94ft9ly/server/tasks/3dbe6241ac53035980a3cf73-0-0',25971,180978,1.79590494929820370675e+09,NULL,NULL,NULL,0);
INSERT INTO "tasks" VALUES('6588c0c7e49ab502317419f9-0-0','6588c0c7e49ab502317419f9','FAILED','/tmp/tmpt94ft9ly/server/tasks/6588c0c7e49ab502317419f9-0-0',25973,180978,1.7959049492975811958e+09,NULL,NULL,NULL,1);
INSERT INTO "tasks" VALUES('9b2ebe52fc0efb91e9ff70c8-0-0','9b2ebe52fc0efb91e9ff70c8','CANCELLED','/tmp/tmpt94ft9ly/server/tasks/9b2ebe52fc0efb91e9ff70c8-0-0',25975,180983,1.79590494933830857279e+09,NULL,'cancel',1.79590494981353092189e+09,130);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, user TEXT NOT NULL, label TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, job_id TEXT);
INSERT INTO "tokens" VALUES('afcfa17ab249cf57d33efd72c185869264388699ac15a6928156492c39bbff88','alice','everest-jupyter',1.79590494920169878008e+09,1.79650974920161581038e+09,NULL);
CREATE TABLE users (
    name TEXT PRIMARY KEY, password TEXT NOT NULL, created REAL NOT NULL);
INSERT INTO "users" VALUES('alice','scrypt$16384$8$1$c3328832b4d0fb951596ae68d5dbcb36$67edc2ce01db5d5957ebd69e18e56aef9310ae737ce7ebb9eaf3d44571283dc0',1.79590494830527329451e+09);
CREATE INDEX tokens_job ON tokens(job_id);
CREATE INDEX jobs_owner ON jobs(owner, seq);
CREATE INDEX jobs_state ON jobs(state, seq);
CREATE INDEX tasks_job ON tasks(job_id);
CREATE INDEX tasks_state ON tasks(state);
CREATE INDEX events_job ON events(job_id, ts);
CREATE INDEX files_owner ON files(owner, kind);
CREATE INDEX files_job ON files(job_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('jobs',3);
COMMIT;
