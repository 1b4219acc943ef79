// Builds src/plugin.js into {{name}}.wasm with componentize-js.
//
// src/berth.js, the berth SDK, needs no bundling: while building,
// componentize-js reads the modules src/plugin.js imports from the file
// system, resolving them against the importing file's folder. Keep imported
// modules in src/: when the build runs from another folder than this one, the
// engine sees no further than src/.
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  sourcePath: here('./src/plugin.js'),
  witPath: here('./wit/berth.wit'),
  worldName: 'plugin',
  // berth offers no wasi:http, and a component that imports it cannot run
  // there; the other default features (stdio, clocks, random) berth provides.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(here('./{{name}}.wasm'), component);
console.log(`built {{name}}.wasm (${(component.length / (1 << 20)).toFixed(1)} MiB)`);
