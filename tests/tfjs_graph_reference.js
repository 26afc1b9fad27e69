// Runs a TensorFlow.js graph model on tfjs's pure-JavaScript CPU backend, the reference for tests/test_faceres.py.
// node tfjs_graph_reference.js MODEL_JSON INPUT_F32 N H W C OUT_PREFIX NODE [NODE ...]
// INPUT_F32: little-endian float32 NHWC values; writes OUT_PREFIX.K.f32 (float32) and OUT_PREFIX.K.json (shape)
// for the K-th requested node. Needs @tensorflow/tfjs on NODE_PATH (npm install @tensorflow/tfjs).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelPath, inputPath, n, h, w, c, outPrefix, ...names] = process.argv.slice(2);
  const model = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
  const weightSpecs = [];
  const shards = [];
  for (const group of model.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const shard of group.paths) shards.push(fs.readFileSync(path.join(path.dirname(modelPath), shard)));
  }
  const bytes = Buffer.concat(shards);
  const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  await tf.setBackend('cpu');
  const graph = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs, weightData, format: model.format, signature: model.signature,
  }));
  const raw = fs.readFileSync(inputPath);
  const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const input = tf.tensor4d(values, [n, h, w, c].map(Number));
  const outputs = graph.execute(input, names);
  (Array.isArray(outputs) ? outputs : [outputs]).forEach((tensor, k) => {
    fs.writeFileSync(`${outPrefix}.${k}.f32`, Buffer.from(tensor.dataSync().buffer));
    fs.writeFileSync(`${outPrefix}.${k}.json`, JSON.stringify(tensor.shape));
  });
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
