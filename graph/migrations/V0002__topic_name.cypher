// (:Persona)-[:INTERESTED_IN]->(:Topic {name}): a topic is identified by its name.
CREATE CONSTRAINT topic_name IF NOT EXISTS FOR (t:Topic) REQUIRE t.name IS UNIQUE;
