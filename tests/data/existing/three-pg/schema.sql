CREATE TABLE domains (domain TEXT PRIMARY KEY, active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE users (
  email    TEXT PRIMARY KEY,
  password TEXT NOT NULL,
  maildir  TEXT NOT NULL,
  active   INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE alias (address TEXT NOT NULL, goto TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1);
INSERT INTO domains VALUES ('three.example', 1), ('gone.example', 0);
INSERT INTO users VALUES ('carol@three.example', '@HASH@', 'three.example/carol/', 1);
INSERT INTO users VALUES ('dave@three.example', '@HASH@', 'three.example/dave/', 1);
INSERT INTO users VALUES ('old@three.example', '@HASH@', 'three.example/old/', 0);
INSERT INTO users VALUES ('ghost@gone.example', '@HASH@', 'gone.example/ghost/', 1);
INSERT INTO alias VALUES ('carol@three.example', 'carol@three.example', 1);
INSERT INTO alias VALUES ('dave@three.example', 'dave@three.example', 1);
INSERT INTO alias VALUES ('team@three.example', 'carol@three.example', 1);
INSERT INTO alias VALUES ('team@three.example', 'dave@three.example', 1);
INSERT INTO alias VALUES ('retired@three.example', 'carol@three.example', 0);
