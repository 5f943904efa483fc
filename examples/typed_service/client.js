// Calls a typed actor through the actorhub gateway's gRPC service, with the published proto.
//
//   npm install @grpc/grpc-js @grpc/proto-loader
//   ACTORHUB_TOKEN=$(cat SESSION_DIR/token) node client.js 127.0.0.1:GRPC_PORT NAMESPACE ACTOR METHOD '{"args": [...]}'
//
// Prints the method's result as JSON; on an error, its gRPC status, type and message, and exits 1.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO = process.env.ACTORHUB_GATEWAY_PROTO
  || path.join(__dirname, "..", "..", "protos", "actorhub", "gateway", "v1", "gateway.proto");

function main() {
  const [address, namespace, actor, method, argsJson = "{}"] = process.argv.slice(2);
  if (!method) {
    console.error("usage: node client.js HOST:PORT NAMESPACE ACTOR METHOD [ARGS_JSON]");
    process.exit(2);
  }
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, oneofs: true });
  const { Gateway } = grpc.loadPackageDefinition(definition).actorhub.gateway.v1;
  const client = new Gateway(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${process.env.ACTORHUB_TOKEN || ""}`);
  const request = { namespace, actor, method, args_json: argsJson };
  client.Invoke(request, metadata, { deadline: Date.now() + 30000 }, (error, reply) => {
    if (error) {
      const type = error.metadata.get("actorhub-error-type")[0] || "";
      console.log(JSON.stringify({ code: grpc.status[error.code], type, message: error.details }));
      process.exit(1);
    }
    console.log(JSON.stringify({ result: JSON.parse(reply.result_json) }));
    client.close();
  });
}

main();
