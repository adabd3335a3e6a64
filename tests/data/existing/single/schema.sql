CREATE TABLE users (
  username TEXT NOT NULL,
  domain   TEXT NOT NULL,
  mailbox  TEXT NOT NULL,
  password TEXT
);
INSERT INTO users VALUES ('alice', 'single.example', 'alice_single.example', '@HASH@');
INSERT INTO users VALUES ('bert', 'single.example', 'bert_single.example', '@HASH@');
-- The catch-all: anything else at single.example goes to alice.
INSERT INTO users VALUES ('%', 'single.example', 'alice_single.example', NULL);
