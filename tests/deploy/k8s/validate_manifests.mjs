// Validates the Kubernetes objects of deploy/k8s and of each kustomize
// overlay in it against the Kubernetes API schemas (npm's kubernetes-models:
// the OpenAPI schemas of the Kubernetes API as JSON-schema validators, and
// the same objects as TypeScript interfaces).
//
//   node validate_manifests.mjs DEPLOY_DIR OUT_DIR
//
// Each kustomization (a directory with kustomization.yaml) is rendered the
// way `kubectl kustomize` does for the features cbloss uses (resources that
// are files or other kustomizations, and JSON 6902 patches selected by
// target); a feature outside that subset is an error, never ignored. Every
// rendered object must then
//   1. pass its kind's schema validation (types, required fields, formats);
//   2. type-check as its kind's interface: OUT_DIR/manifests.ts, which
//      scripts/test-k8s.sh compiles with tsc --strict, so that a field the
//      API does not have (a misspelt probe, say) is an error as well; the
//      schemas alone allow unknown fields.
// A self-test first shows that both checks catch a broken object.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

import yaml from "js-yaml";
import jsonpatch from "fast-json-patch";

const require = createRequire(import.meta.url);

// "apps/v1" -> "apps/v1", "v1" -> "v1": kubernetes-models' module folders.
function modelModule(apiVersion, kind) {
  return `kubernetes-models/${apiVersion}/${kind}`;
}

function loadModel(apiVersion, kind) {
  let mod;
  try {
    mod = require(modelModule(apiVersion, kind));
  } catch (e) {
    throw new Error(`no Kubernetes API schema for ${apiVersion} ${kind}: ${e.message}`);
  }
  if (typeof mod[kind] !== "function") {
    throw new Error(`${modelModule(apiVersion, kind)} has no model ${kind}`);
  }
  return mod[kind];
}

function readYamlDocs(file) {
  return yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d != null);
}

const KNOWN_KUSTOMIZATION_KEYS = new Set(["apiVersion", "kind", "resources", "patches"]);

function matchesTarget(object, target) {
  const [group, version] = object.apiVersion.includes("/")
    ? object.apiVersion.split("/")
    : ["", object.apiVersion];
  for (const [key, want] of Object.entries(target)) {
    const have = { group, version, kind: object.kind, name: object.metadata?.name }[key];
    if (have === undefined && !["group", "version", "kind", "name"].includes(key)) {
      throw new Error(`patch target key '${key}' is not supported`);
    }
    if (have !== want) return false;
  }
  return true;
}

// The objects of the kustomization in `dir`, patches applied.
function render(dir) {
  const file = path.join(dir, "kustomization.yaml");
  const k = yaml.load(fs.readFileSync(file, "utf8"));
  if (k.apiVersion !== "kustomize.config.k8s.io/v1beta1" || k.kind !== "Kustomization") {
    throw new Error(`${file}: not a kustomize.config.k8s.io/v1beta1 Kustomization`);
  }
  for (const key of Object.keys(k)) {
    if (!KNOWN_KUSTOMIZATION_KEYS.has(key)) {
      throw new Error(`${file}: '${key}' is not rendered by this check; extend it`);
    }
  }
  const objects = [];
  for (const resource of k.resources ?? []) {
    const target = path.join(dir, resource);
    if (fs.statSync(target).isDirectory()) {
      objects.push(...render(target));
    } else {
      for (const doc of readYamlDocs(target)) objects.push({ source: target, doc });
    }
  }
  for (const patch of k.patches ?? []) {
    if (!patch.path || !patch.target) {
      throw new Error(`${file}: only patches with path and target are supported`);
    }
    const ops = yaml.load(fs.readFileSync(path.join(dir, patch.path), "utf8"));
    if (!Array.isArray(ops)) {
      throw new Error(`${file}: ${patch.path} is not a JSON 6902 patch (a list of operations)`);
    }
    const hits = objects.filter((o) => matchesTarget(o.doc, patch.target));
    if (hits.length === 0) {
      throw new Error(`${file}: patch ${patch.path} matches no object`);
    }
    for (const o of hits) {
      // validateOperation=true: a path that does not exist is an error.
      o.doc = jsonpatch.applyPatch(o.doc, ops, true, false).newDocument;
      o.source = `${o.source} + ${path.join(dir, patch.path)}`;
    }
  }
  return objects;
}

function schemaErrors(doc) {
  const Model = loadModel(doc.apiVersion, doc.kind);
  try {
    new Model(doc).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

// OUT_DIR/manifests.ts: every object as a constant of its kind's interface.
function typescriptSource(named) {
  const lines = [];
  named.forEach(({ doc }, i) => {
    lines.push(`import type { I${doc.kind} as T${i} } from "${modelModule(doc.apiVersion, doc.kind)}";`);
  });
  named.forEach(({ label, doc }, i) => {
    lines.push(`// ${label}`);
    lines.push(`export const object${i}: T${i} = ${JSON.stringify(doc, null, 2)};`);
  });
  return lines.join("\n") + "\n";
}

function selfTest() {
  // A wrong type must fail the schema check...
  const broken = {
    apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
    spec: { selector: {}, template: { spec: { containers: [
      { name: "c", image: "i", ports: [{ containerPort: "grpc" }] }] } } },
  };
  if (schemaErrors(broken) === null) {
    throw new Error("self-test: a string containerPort passed the schema check");
  }
  // ...and a missing required field too.
  const noContainers = { apiVersion: "v1", kind: "Pod", metadata: { name: "x" }, spec: {} };
  if (schemaErrors(noContainers) === null) {
    throw new Error("self-test: a Pod without containers passed the schema check");
  }
}

function main() {
  if (process.argv.length !== 4) {
    console.error("usage: node validate_manifests.mjs DEPLOY_DIR OUT_DIR");
    process.exit(2);
  }
  const outDir = path.resolve(process.argv[3]);
  // Paths in the report relative to the repository.
  process.chdir(path.dirname(path.resolve(process.argv[2])));
  const deployDir = path.basename(process.argv[2]);
  selfTest();
  const kustomizations = [];
  const walk = (dir) => {
    if (fs.existsSync(path.join(dir, "kustomization.yaml"))) kustomizations.push(dir);
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
    }
  };
  walk(deployDir);
  if (kustomizations.length === 0) throw new Error(`no kustomization.yaml under ${deployDir}`);

  let failed = 0;
  const named = [];
  for (const dir of kustomizations.sort()) {
    const rel = dir;
    const objects = render(dir);
    for (const { source, doc } of objects) {
      const label = `${rel}: ${doc.apiVersion} ${doc.kind} ${doc.metadata?.name} (${source})`;
      const errors = schemaErrors(doc);
      if (errors !== null) {
        failed++;
        console.log(`FAIL ${label}\n     ${errors}`);
      } else {
        console.log(`ok   ${label}`);
      }
      named.push({ label, doc });
    }
  }
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, "manifests.ts"), typescriptSource(named));
  // For the type check's own self-test: must not compile.
  fs.writeFileSync(path.join(outDir, "selftest-unknown-field.ts"), typescriptSource([{
    label: "self-test: a misspelt field",
    doc: { apiVersion: "v1", kind: "Pod", metadata: { name: "x" },
           spec: { containers: [{ name: "c", image: "i", readinesProbe: {} }] } },
  }]));
  console.log(`manifests: ${named.length - failed} passed, ${failed} failed ` +
              `(${kustomizations.length} kustomizations)`);
  process.exit(failed === 0 ? 0 : 1);
}

main();
