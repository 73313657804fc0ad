// A stock glTF viewer for tests and benchmarks: three.js GLTFLoader with the file's OWN materials, lit only
// by a hemisphere light and a key light (no environment map), as a plain three.js app would show it.
// Bundled by esbuild into an IIFE (web/tools/glb_viewer.py does that) and run in headless Chromium.
// window.renderGLB(base64, {azimuth, elevation, size, background}) resolves once the frame is drawn.

import {
  Box3,
  Color,
  DirectionalLight,
  HemisphereLight,
  PerspectiveCamera,
  Scene,
  SRGBColorSpace,
  Vector3,
  WebGLRenderer,
} from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";

function decodeBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

window.renderGLB = async function renderGLB(b64, opts = {}) {
  const { azimuth = 35, elevation = 25, size = 256, background = "#ffffff" } = opts;
  const renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.outputColorSpace = SRGBColorSpace;
  renderer.setPixelRatio(1);
  renderer.setSize(size, size);
  renderer.domElement.id = "view";
  document.body.replaceChildren(renderer.domElement);

  const scene = new Scene();
  scene.background = new Color(background);
  scene.add(new HemisphereLight(0xffffff, 0x444444, 2.0));
  const key = new DirectionalLight(0xffffff, 2.0);
  scene.add(key);

  const gltf = await new GLTFLoader().parseAsync(decodeBase64(b64), "");
  scene.add(gltf.scene);
  const box = new Box3().setFromObject(gltf.scene);
  const center = box.getCenter(new Vector3());
  const radius = box.getSize(new Vector3()).length() / 2;
  const camera = new PerspectiveCamera(40, 1, radius / 100, radius * 100);
  const az = (azimuth * Math.PI) / 180;
  const el = (elevation * Math.PI) / 180;
  const dir = new Vector3(Math.cos(el) * Math.sin(az), Math.sin(el), Math.cos(el) * Math.cos(az));
  const dist = radius / Math.sin((20 * Math.PI) / 180);
  camera.position.copy(center).addScaledVector(dir, dist);
  camera.lookAt(center);
  key.position.copy(camera.position).add(new Vector3(radius, 2 * radius, 0));  // above and right of the camera
  renderer.render(scene, camera);
  const materials = [];
  gltf.scene.traverse((o) => {
    if (o.isMesh) {
      const m = o.material;
      materials.push({ type: m.type, metalness: m.metalness, roughness: m.roughness, side: m.side,
        hasMap: !!m.map, mapColorSpace: m.map ? m.map.colorSpace : null, vertexColors: m.vertexColors });
    }
  });
  return { materials, triangles: renderer.info.render.triangles };
};
window.stockViewerReady = true;
