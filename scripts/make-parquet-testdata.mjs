// Writes the DuckDB-made parquet files that dataset/parquet_test.go reads:
// clip-retrieval-shaped metadata with integer and digit-string ids, snappy
// and zstd, dictionary encoded. Run: make parquet-testdata (needs npm).
//   node scripts/make-parquet-testdata.mjs dataset/testdata
import { DuckDBInstance } from '@duckdb/node-api';

const out = process.argv[2] ?? 'dataset/testdata';
const db = await DuckDBInstance.create(':memory:');
const c = await db.connect();
// 1000 rows; ids repeat in runs of 4 so the writer dictionary-encodes them.
await c.run(`CREATE TABLE m AS SELECT
  (i // 4) * 7 + 100000000 AS image_path,
  printf('%09d', (i // 4) * 7 + 123) AS key,
  'a caption ' || (i % 5) AS caption,
  'https://example.invalid/' || i || '.jpg' AS url
  FROM range(1000) t(i)`);
for (const codec of ['snappy', 'zstd']) {
  await c.run(`COPY m TO '${out}/duckdb_${codec}.parquet' (FORMAT parquet, COMPRESSION ${codec}, ROW_GROUP_SIZE 300)`);
}
// an int32 id column and a null
await c.run(`COPY (SELECT CAST(i AS INTEGER) AS image_path FROM range(10) t(i)) TO '${out}/duckdb_int32.parquet' (FORMAT parquet)`);
await c.run(`COPY (SELECT CASE WHEN i = 3 THEN NULL ELSE i END AS image_path FROM range(10) t(i)) TO '${out}/duckdb_null.parquet' (FORMAT parquet)`);
console.log('wrote parquet test files to', out);
