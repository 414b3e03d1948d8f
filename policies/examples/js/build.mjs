// node build.mjs SOURCE.js WIT_DIR OUT.wasm — one JavaScript policy into a component.
// The policy needs no WASI features (no console, clocks, randomness or network).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: source,
  witPath: wit,
  worldName: 'policy',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
