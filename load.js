// Entry point so that `k6 run load.js` works from the repository root as well as from load/
// (see load/README.md). The scenarios stay in load/load.js; this file only re-exports them.
//
// `export *` carries `options` and every scenario function (w255, text, pose, audio, bench),
// which k6 looks up by name in the entry module. load/load.js has no default export, so there
// is none to forward.
//
// No path fix-up is needed for the data files: k6's open() resolves a relative path against
// the directory of the module that calls it, not the working directory or the entry script, so
// `./data` is load/data from either place (and a relative DATA_DIR or REVIEWS_FILE is taken
// relative to load/ too).
export * from "./load/load.js";
