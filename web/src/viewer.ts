// The 3D viewer: three.js with GLTFLoader, OrbitControls (orbit, zoom, pan) and RoomEnvironment
// lighting. It renders on demand (when the view changes), so an open page costs no CPU at rest.
// The container's data-state is "empty", "loading", "loaded" or "error" (tests wait on it).

import {
  Box3,
  Color,
  Mesh,
  Object3D,
  PerspectiveCamera,
  PMREMGenerator,
  Scene,
  Sphere,
  Texture,
  Vector3,
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { RoomEnvironment } from "three/examples/jsm/environments/RoomEnvironment.js";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";

const BACKGROUND = 0xe9ecef;

export class Viewer {
  private renderer: WebGLRenderer | null = null;
  private readonly scene = new Scene();
  private readonly camera = new PerspectiveCamera(40, 1, 0.01, 100);
  private controls: OrbitControls | null = null;
  private model: Object3D | null = null;
  private frame = 0;

  constructor(private readonly container: HTMLElement) {
    this.scene.background = new Color(BACKGROUND);
    this.setState("empty");
  }

  /** Create the WebGL context lazily: a page without a result never needs one. */
  private ensureRenderer(): WebGLRenderer {
    if (this.renderer) return this.renderer;
    const renderer = new WebGLRenderer({ antialias: true });
    renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
    renderer.domElement.setAttribute("aria-label", "3D view of the result: drag to orbit, scroll to zoom");
    renderer.domElement.tabIndex = 0;
    this.container.prepend(renderer.domElement);
    const pmrem = new PMREMGenerator(renderer);
    this.scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
    pmrem.dispose();
    const controls = new OrbitControls(this.camera, renderer.domElement);
    controls.addEventListener("change", () => this.requestRender());
    controls.listenToKeyEvents(renderer.domElement);
    this.controls = controls;
    new ResizeObserver(() => this.resize()).observe(this.container);
    this.renderer = renderer;
    this.resize();
    return renderer;
  }

  private setState(state: "empty" | "loading" | "loaded" | "error", message = ""): void {
    this.container.dataset.state = state;
    const note = this.container.querySelector<HTMLElement>(".viewer-note");
    if (note) {
      note.textContent = message;
      note.hidden = message === "";
    }
  }

  /** Show the GLB at `url` (a same-origin or presigned link), framed to fit. */
  async load(url: string): Promise<void> {
    this.ensureRenderer();
    this.setState("loading", "Loading the mesh…");
    try {
      const gltf = await new GLTFLoader().loadAsync(url);
      this.clear();
      this.model = gltf.scene;
      this.scene.add(gltf.scene);
      this.frameModel(gltf.scene);
      this.setState("loaded");
    } catch (err) {
      this.setState("error", `The mesh could not be shown: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.requestRender();
  }

  /** Remove the model and free its GPU buffers and textures. */
  clear(): void {
    if (this.model) {
      this.scene.remove(this.model);
      this.model.traverse((node) => {
        const mesh = node as Mesh;
        if (!mesh.isMesh) return;
        mesh.geometry.dispose();
        for (const material of Array.isArray(mesh.material) ? mesh.material : [mesh.material]) {
          for (const value of Object.values(material)) if (value instanceof Texture) value.dispose();
          material.dispose();
        }
      });
    }
    this.model = null;
    this.setState("empty");
    this.requestRender();
  }

  private frameModel(object: Object3D): void {
    const sphere = new Box3().setFromObject(object).getBoundingSphere(new Sphere());
    const radius = sphere.radius > 0 ? sphere.radius : 1;
    const distance = radius / Math.sin((this.camera.fov * Math.PI) / 360);
    const direction = new Vector3(0.6, 0.45, 1).normalize();
    this.camera.position.copy(sphere.center).addScaledVector(direction, distance * 1.1);
    this.camera.near = distance / 100;
    this.camera.far = distance * 10;
    this.camera.updateProjectionMatrix();
    this.controls?.target.copy(sphere.center);
    this.controls?.update();
  }

  private resize(): void {
    if (!this.renderer) return;
    const width = Math.max(1, this.container.clientWidth);
    const height = Math.max(1, Math.round(width * 0.75));
    this.renderer.setSize(width, height);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  private requestRender(): void {
    if (!this.renderer || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.renderer?.render(this.scene, this.camera);
    });
  }
}
