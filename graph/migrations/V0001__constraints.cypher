// Identity of the nodes Sight mirrors from PostgreSQL: one node per projects.id / personas.id.
// The uniqueness constraints also give MERGE on these ids an index to use.
CREATE CONSTRAINT project_id IF NOT EXISTS FOR (p:Project) REQUIRE p.id IS UNIQUE;
CREATE CONSTRAINT persona_id IF NOT EXISTS FOR (p:Persona) REQUIRE p.id IS UNIQUE;
// KPI queries start from all personas of one project.
CREATE INDEX persona_project_id IF NOT EXISTS FOR (p:Persona) ON (p.project_id);
