#!/usr/bin/env node
// Compile the DR market contracts with solc-js (standard JSON, evmVersion "prague") and write one
// artifact per contract (ABI + creation bytecode) to ../artifacts/<Name>.json.
// Usage: node compile.js [--check]   (--check compares with the committed artifacts, writes nothing)
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const HERE = __dirname;
const SOURCES = ["DRToken.sol", "DRRegistry.sol", "DRMarketBase.sol", "DRMarketSettlement.sol", "DRMarket.sol"];
const CONTRACTS = { "DRToken.sol": "DRToken", "DRMarket.sol": "DRMarket" };
// DRMarket runs DRMarketSettlement's functions by DELEGATECALL (its fallback): callers see one ABI.
const EXTENSIONS = { DRMarket: ["DRMarketSettlement.sol", "DRMarketSettlement"] };

function signature(entry) {
  return `${entry.type} ${entry.name || ""}(${(entry.inputs || []).map((i) => i.type).join(",")})`;
}

function mergeAbi(abi, extra) {
  const seen = new Set(abi.map(signature));
  return abi.concat(extra.filter((e) => e.type !== "constructor" && !seen.has(signature(e))));
}
const OUT = path.join(HERE, "..", "artifacts");
const SETTINGS = {
  evmVersion: "prague",
  viaIR: true,
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function findImport(name) {
  const file = path.join(HERE, "node_modules", name);
  if (!fs.existsSync(file)) return { error: `not found: ${name} (run npm ci --prefix gateway/chain/contracts)` };
  return { contents: fs.readFileSync(file, "utf8") };
}

function compile() {
  const sources = {};
  for (const name of SOURCES) sources[name] = { content: fs.readFileSync(path.join(HERE, name), "utf8") };
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) process.exit(1);
  const artifacts = {};
  for (const [source, name] of Object.entries(CONTRACTS)) {
    const c = output.contracts[source][name];
    artifacts[name] = {
      contractName: name,
      sourceName: source,
      compiler: `solc-js ${solc.version()}`,
      settings: { evmVersion: SETTINGS.evmVersion, viaIR: SETTINGS.viaIR, optimizer: SETTINGS.optimizer },
      abi: EXTENSIONS[name]
        ? mergeAbi(c.abi, output.contracts[EXTENSIONS[name][0]][EXTENSIONS[name][1]].abi)
        : c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  const artifacts = compile();
  let stale = 0;
  for (const [name, artifact] of Object.entries(artifacts)) {
    const file = path.join(OUT, `${name}.json`);
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const size = (artifact.deployedBytecode.length - 2) / 2;
    if (check) {
      const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
      if (old !== text) { stale += 1; process.stderr.write(`stale: ${file}\n`); }
    } else {
      fs.mkdirSync(OUT, { recursive: true });
      fs.writeFileSync(file, text);
      process.stdout.write(`${name}: ${size} bytes deployed -> ${path.relative(process.cwd(), file)}\n`);
    }
  }
  if (stale) {
    process.stderr.write("artifacts differ from the sources: run node gateway/chain/contracts/compile.js\n");
    process.exit(1);
  }
}

main();
