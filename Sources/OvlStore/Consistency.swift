import OvlSystem

extension LayerLinks {
  /// What is wrong with the driver dir itself: layer dirs the metadata does not know,
  /// known layers without a dir, `link` files and `l/` links that do not match, `lower`
  /// files that do not resolve. `known`: the layer IDs the metadata lists.
  func problems(known: [String], parents: (String) throws(OvlError) -> [String]?) -> [StoreProblem] {
    var problems: [StoreProblem] = []
    func add(_ error: OvlError) {
      switch error {
      case .refused(let path, let reason, _), .format(let path, let reason, _): problems.append(StoreProblem(path: path, problem: reason))
      default: problems.append(StoreProblem(path: tree.path, problem: error.description))
      }
    }
    let entries: [DirectoryEntry]
    do { entries = try tree.entries(driver) ?? [] } catch {
      add(error)
      return problems
    }
    let knownSet = Set(known)
    var dirs: Set<String> = []
    for entry in entries where entry.mayBeDirectory {
      let name = String(decoding: entry.name, as: UTF8.self)
      guard name != "l", tree.isDirectory("\(driver)/\(name)") else { continue }
      dirs.insert(name)
      if !knownSet.contains(name) {
        problems.append(StoreProblem(path: tree.full("\(driver)/\(name)"), problem: "a layer directory that the store's metadata does not list"))
      }
    }
    // Each link name → the layer whose `link` file names it.
    var linkOwners: [String: String] = [:]
    for id in known {
      guard dirs.contains(id) else {
        problems.append(StoreProblem(path: tree.full("\(driver)/\(id)"), problem: "layer \(id) is listed but its directory is missing"))
        continue
      }
      if !tree.isDirectory("\(driver)/\(id)/diff") {
        problems.append(StoreProblem(path: layerPath(id), problem: "layer \(id) has no diff directory"))
      }
      do {
        if let link = try tree.readLine("\(driver)/\(id)/link") {
          if !StoreID.isLinkName(Substring(link)) {
            problems.append(StoreProblem(path: layerPath(id, "link"), problem: "'\(link)' is not a link name"))
          } else {
            linkOwners[link] = id
            do {
              let target = try linkTarget(link)
              if target != id {
                problems.append(StoreProblem(path: tree.full("\(driver)/l/\(link)"), problem: "links to layer \(target), but layer \(id)'s link file names it"))
              }
            } catch { add(error) }
          }
        }
        let chain = try lowerChain(of: id)
        if let expected = try parents(id), expected != chain {
          problems.append(StoreProblem(path: layerPath(id, "lower"),
            problem: "names [\(chain.map(StoreID.short).joined(separator: ", "))], but the store's metadata stacks the layer on [\(expected.map(StoreID.short).joined(separator: ", "))]"))
        }
      } catch { add(error) }
    }
    // Links no layer names: dangling or wrong ones are damage, others only left over.
    do {
      for entry in try tree.entries("\(driver)/l") ?? [] {
        let name = String(decoding: entry.name, as: UTF8.self)
        guard linkOwners[name] == nil else { continue }
        do {
          guard StoreID.isLinkName(Substring(name)) else {
            problems.append(StoreProblem(path: tree.full("\(driver)/l/\(name)"), problem: "not a link name"))
            continue
          }
          _ = try linkTarget(name)
        } catch { add(error) }
      }
    } catch { add(error) }
    // A broken link is met through each lower file that names it and through l/: once.
    var seen: Set<String> = []
    return problems.filter { seen.insert($0.path + "\u{0}" + $0.problem).inserted }
  }
}

extension ContainersStorage {
  public func consistencyProblems() -> [StoreProblem] {
    var problems = links.problems(known: layers.map(\.id)) { (id) throws(OvlError) in try parentChain(of: id) }
    for c in containers where byID[c.layer] == nil {
      problems.append(StoreProblem(path: tree.full(Self.containersFile), problem: "container \(c.id) names layer \(c.layer), which \(Self.layersFile) does not list"))
    }
    for image in images {
      if let layer = image.layer, byID[layer] == nil {
        problems.append(StoreProblem(path: tree.full(Self.imagesFile), problem: "image \(image.id) names layer \(layer), which \(Self.layersFile) does not list"))
      }
    }
    return problems
  }
}
