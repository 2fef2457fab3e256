-- One day's features and labels from the raw tables: run by the nightly DAG's extract task for
-- its own partition (%(partition)s, a date), never for "today". Idempotent: a rerun or backfill of
-- the same day upserts the same rows, and a row whose values did not change is not rewritten.
-- Missing values ('', 'NA', 'N/A', 'null', JSON null) become NULL, for the model's missing-value
-- treatment; out-of-range numbers and unseen categories pass through as they are, for the
-- model's declared treatments to handle (and are counted). A row that is malformed (a field
-- absent from its document, a number that is not one, a label that is not 0 or 1) goes to
-- etl.quarantine with the reason.

-- The day's documents; an application sent twice that day keeps its latest document, and the
-- earlier one is quarantined as superseded.
CREATE TEMP TABLE day_raw ON COMMIT DROP AS
SELECT r.event_id, r.application_id, r.payload,
       CASE
           WHEN r.event_id <> max(r.event_id) OVER (PARTITION BY r.application_id)
               THEN 'superseded by a later document for application ' || r.application_id
           WHEN NOT r.payload ?& ARRAY['Age', 'Employment', 'Education', 'Marital', 'Occupation',
                                      'Income', 'Gender', 'Deductions', 'Hours']
               THEN 'absent field(s): ' || array_to_string(ARRAY(
                   SELECT f FROM unnest(ARRAY['Age', 'Employment', 'Education', 'Marital',
                       'Occupation', 'Income', 'Gender', 'Deductions', 'Hours']) f
                   WHERE NOT r.payload ? f), ', ')
           ELSE concat_ws('; ',
               CASE WHEN NOT etl.is_number(r.payload ->> 'Age')
                    THEN 'Age is not a number: ' || (r.payload ->> 'Age') END,
               CASE WHEN NOT etl.is_number(r.payload ->> 'Income')
                    THEN 'Income is not a number: ' || (r.payload ->> 'Income') END,
               CASE WHEN NOT etl.is_number(r.payload ->> 'Hours')
                    THEN 'Hours is not a number: ' || (r.payload ->> 'Hours') END)
       END AS problem
FROM etl.raw_applications r
WHERE r.arrived_on = %(partition)s;

INSERT INTO etl.quarantine (source, source_id, partition_date, problem, payload)
SELECT 'raw_applications', event_id, %(partition)s, problem, payload FROM day_raw
WHERE problem <> ''
UNION ALL
SELECT 'raw_labels', application_id, %(partition)s,
       'Adjusted is not 0 or 1: ' || coalesce(adjusted, 'NULL'),
       jsonb_build_object('application_id', application_id, 'adjusted', adjusted)
FROM etl.raw_labels
WHERE arrived_on = %(partition)s AND adjusted IS DISTINCT FROM '0' AND adjusted IS DISTINCT FROM '1'
ON CONFLICT (source, source_id) DO UPDATE SET problem = excluded.problem,
    payload = excluded.payload
WHERE (quarantine.problem, quarantine.payload) IS DISTINCT FROM (excluded.problem, excluded.payload);

INSERT INTO etl.features (application_id, feature_date, age, employment, education, marital,
                          occupation, income, gender, deductions, hours)
SELECT application_id, %(partition)s,
       etl.present(payload ->> 'Age')::double precision,
       etl.present(payload ->> 'Employment'),
       etl.present(payload ->> 'Education'),
       etl.present(payload ->> 'Marital'),
       etl.present(payload ->> 'Occupation'),
       etl.present(payload ->> 'Income')::double precision,
       etl.present(payload ->> 'Gender'),
       etl.present(payload ->> 'Deductions'),
       etl.present(payload ->> 'Hours')::double precision
FROM day_raw WHERE problem = ''
ON CONFLICT (application_id, feature_date) DO UPDATE SET
    age = excluded.age, employment = excluded.employment, education = excluded.education,
    marital = excluded.marital, occupation = excluded.occupation, income = excluded.income,
    gender = excluded.gender, deductions = excluded.deductions, hours = excluded.hours
WHERE (features.age, features.employment, features.education, features.marital,
       features.occupation, features.income, features.gender, features.deductions,
       features.hours)
      IS DISTINCT FROM
      (excluded.age, excluded.employment, excluded.education, excluded.marital,
       excluded.occupation, excluded.income, excluded.gender, excluded.deductions,
       excluded.hours);

INSERT INTO etl.labels (application_id, adjusted, label_date)
SELECT application_id, adjusted::integer, %(partition)s
FROM etl.raw_labels
WHERE arrived_on = %(partition)s AND adjusted IN ('0', '1')
ON CONFLICT (application_id) DO UPDATE SET adjusted = excluded.adjusted,
    label_date = excluded.label_date
WHERE (labels.adjusted, labels.label_date) IS DISTINCT FROM (excluded.adjusted, excluded.label_date);
