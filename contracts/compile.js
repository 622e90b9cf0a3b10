#!/usr/bin/env node
// Compiles each contract in CONTRACTS with solc-js (offline, bundled soljson) and writes
// contracts/build/<Name>.json as a Hardhat-style artifact.
// Run with `npm run compile-contracts`. The output is deterministic.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

// TestToken: the dev chain's USDC/USDT. OddTransferToken: test-only malformed Transfer logs.
const CONTRACTS = ["TestToken", "OddTransferToken"];
const REPO_ROOT = path.resolve(__dirname, "..");

function compile(CONTRACT_NAME) {
  const SOURCE_NAME = `contracts/${CONTRACT_NAME}.sol`;
  const OUT_FILE = path.join(__dirname, "build", `${CONTRACT_NAME}.json`);
  const source = fs.readFileSync(path.join(REPO_ROOT, SOURCE_NAME), "utf8");

  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: source } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      outputSelection: {
        [SOURCE_NAME]: {
          [CONTRACT_NAME]: [
            "abi",
            "evm.bytecode.object",
            "evm.bytecode.linkReferences",
            "evm.deployedBytecode.object",
            "evm.deployedBytecode.linkReferences",
          ],
        },
      },
    },
  };

  // No import callback: the contract has no imports, and any import is an error.
  const output = JSON.parse(solc.compile(JSON.stringify(input)));

  const diagnostics = output.errors || [];
  const errors = diagnostics.filter((e) => e.severity === "error");
  for (const w of diagnostics.filter((e) => e.severity !== "error")) {
    process.stderr.write(w.formattedMessage || w.message);
  }
  if (errors.length > 0) {
    for (const e of errors) process.stderr.write(e.formattedMessage || e.message);
    process.stderr.write(`compile.js: solc ${solc.version()} reported ${errors.length} error(s)\n`);
    process.exit(1);
  }

  const contract = output.contracts?.[SOURCE_NAME]?.[CONTRACT_NAME];
  if (!contract || !contract.evm?.bytecode?.object) {
    process.stderr.write(`compile.js: no output for ${SOURCE_NAME}:${CONTRACT_NAME}\n`);
    process.exit(1);
  }

  const artifact = {
    _format: "hh-sol-artifact-1",
    contractName: CONTRACT_NAME,
    sourceName: SOURCE_NAME,
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    linkReferences: contract.evm.bytecode.linkReferences || {},
    deployedLinkReferences: contract.evm.deployedBytecode.linkReferences || {},
  };

  fs.mkdirSync(path.dirname(OUT_FILE), { recursive: true });
  fs.writeFileSync(OUT_FILE, JSON.stringify(artifact, null, 2) + "\n");
  console.log(
    `compiled ${SOURCE_NAME}:${CONTRACT_NAME} with solc ${solc.version()} -> ${path.relative(REPO_ROOT, OUT_FILE)}`,
  );
}

function main() {
  for (const name of CONTRACTS) compile(name);
}

main();
